#!/usr/bin/env python
"""The floor of the benches' layers: NumPy's bare matrix products against torch's whole layer.

Every path convscope has for a dense layer (``gemm``, ``taps``, ``gather``, ``ndstack``, ``pointwise``)
runs the matrix products of im2col, on whatever layout it builds.  This script times, in alternating
rounds in one process, torch's layer (forward, and forward+backward) against those products alone,
their operands already in place: no im2col, no col2im, no bias, no transposes, no per-sample sum.
With ``K = C/G·taps`` and ``L`` output positions per sample (one product per group):

* forward: ``W (C_out/G, K) @ cols (N, K, L)`` per sample, or ``W @ cols_f (K, N·L)`` batch folded;
* grad_input: ``Wᵀ @ g`` in the same two layouts; grad_weight: ``g @ colsᵀ`` (per sample, then summed)
  or ``g_f @ cols_fᵀ``.

A transposed layer is the input gradient of a convolution, so its forward is that convolution's
grad_input product, its grad_input the convolution's forward product, and its grad_weight the same
grad_weight product.  The best layout of each pass is the floor; ``floor ÷ torch`` is what a path on
NumPy's BLAS could reach at most, before any of its copies.

Kernels 3×3 across height and width at stride 1 (groups 1) also have Winograd's F(4×4, 3×3) floor:
its 36 products ``U[t] (C_out, C·k_D) @ V[t] (C·k_D, N·D_out·T)`` (T tiles of 4×4 per output plane;
k_D = D_out = 1 in 2-d), timed as one batched product; the backward's two passes are counted as two
more products of the same size.  Depthwise layers (one input channel per group) have no product:
their floor is one pass over memory, a copy of the input into an array of the output's size (and for
the backward two more such passes), which no kernel that reads its input and writes its output can beat.

convscope's own forward and forward+backward (``conv*d`` then ``conv*d_backward``, on the layer's plan)
are timed in the same rounds, so ``convscope ÷ floor`` (the floor being the lower of the products' and
Winograd's) says how much a path spends beyond the products it cannot avoid: its copies, transforms,
sums and Python.

    python bench/floor.py                                  # bench_nd.py's layers, wall time, all cores
    python bench/floor.py --suite conv2d --markdown bench/floor_conv2d.md   # bench_conv.py's target rows
    python bench/floor.py --layers tcn.d1 w2v.conv1 --markdown floor.md
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_conv  # noqa: E402  (the sampling, the 2-d layers and the machine facts)
import bench_nd  # noqa: E402  (the 1-d, 3-d and transposed layers)


def _out_spatial(x_shape, w_shape, params, transposed):
    """The output's spatial sizes."""
    nd = len(w_shape) - 2
    s, p, d, op = (_per_axis(params.get(name, default), nd)
                   for name, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0)))
    size, ks = x_shape[2:], w_shape[2:]
    if transposed:
        return tuple((i - 1) * si - 2 * pi + di * (k - 1) + oi + 1 for i, si, pi, di, k, oi in zip(size, s, p, d, ks, op))
    return tuple((i + 2 * pi - di * (k - 1) - 1) // si + 1 for i, si, pi, di, k in zip(size, s, p, d, ks))


def conv2d_layers():
    """bench_conv.py's layers of the targets (the rows of its geomeans), as bench_nd's tuples."""
    return [(L.name, (L.N, L.C_in, L.H, L.W), (L.C_out, L.C_in // L.groups, L.kH, L.kW),
             dict(stride=L.stride, padding=L.padding, groups=L.groups), L.count)
            for L in bench_conv.LAYERS if L.net != bench_conv.LARGE]


def _depthwise(layer) -> bool:
    name, x_shape, w_shape, params, _ = layer
    return not name.startswith("tr.") and w_shape[1] == 1 and params.get("groups", 1) == x_shape[1] > 1


def products(layer, rng):
    """{pass: {layout: a call of the bare product}} for the three passes, operands made beforehand;
    for a depthwise layer {pass: {"copy": one pass over memory}}."""
    name, x_shape, w_shape, params, _ = layer
    transposed = name.startswith("tr.")
    N, G = x_shape[0], params.get("groups", 1)
    out_spatial = _out_spatial(x_shape, w_shape, params, transposed)
    if _depthwise(layer):
        x = rng.standard_normal(x_shape, dtype=np.float32)
        out = np.empty((N, w_shape[0]) + out_spatial, dtype=np.float32)
        src = x[(slice(None), slice(None)) + tuple(slice(0, n) for n in out_spatial)]   # the output's size of x
        copy = (lambda: np.copyto(out, src))
        return {"forward": {"copy": copy}, "grad_input": {"copy": copy}, "grad_weight": {"copy": copy}}
    if transposed:      # the convolution whose input gradient this is: input y (N, C_out·…), output x
        Og, K, L = w_shape[0] // G, w_shape[1] * math.prod(w_shape[2:]), math.prod(x_shape[2:])
    else:
        Og, K, L = w_shape[0] // G, w_shape[1] * math.prod(w_shape[2:]), math.prod(out_spatial)
    W = rng.standard_normal((G, Og, K), dtype=np.float32)
    Wt = np.ascontiguousarray(W.transpose(0, 2, 1))
    cols = rng.standard_normal((N, G, K, L), dtype=np.float32)
    g = rng.standard_normal((N, G, Og, L), dtype=np.float32)
    cols_f = np.ascontiguousarray(cols.transpose(1, 2, 0, 3)).reshape(G, K, N * L)
    g_f = np.ascontiguousarray(g.transpose(1, 2, 0, 3)).reshape(G, Og, N * L)
    cols_t, cols_ft = cols.transpose(0, 1, 3, 2), cols_f.transpose(0, 2, 1)
    conv = {
        "forward": {"per sample": lambda: np.matmul(W, cols), "folded": lambda: np.matmul(W, cols_f)},
        "grad_input": {"per sample": lambda: np.matmul(Wt, g), "folded": lambda: np.matmul(Wt, g_f)},
        "grad_weight": {"per sample": lambda: np.matmul(g, cols_t), "folded": lambda: np.matmul(g_f, cols_ft)},
    }
    if transposed:
        conv["forward"], conv["grad_input"] = conv["grad_input"], conv["forward"]
    return conv


def winograd_product(layer, rng):
    """The 36 products of F(4×4, 3×3) (3-d: with the depth taps stacked into channels), or None."""
    if not _winograd_shape(layer):
        return None
    _, x_shape, w_shape, params, _ = layer
    out_spatial = _out_spatial(x_shape, w_shape, params, False)
    planes = out_spatial[0] if len(w_shape) == 5 else 1
    H, W_ = out_spatial[-2:]
    T = -(-H // 4) * -(-W_ // 4)
    Co, K = w_shape[0], w_shape[1] * (w_shape[2] if len(w_shape) == 5 else 1)
    U = rng.standard_normal((36, Co, K), dtype=np.float32)
    V = rng.standard_normal((36, K, x_shape[0] * planes * T), dtype=np.float32)
    return lambda: np.matmul(U, V)


def convscope_calls(layer, rng):
    """(forward, forward+backward) of convscope's layer, on random arrays of the layer's shapes."""
    import convscope

    x, w, b, params, transposed, nd = bench_nd._arrays(layer, rng)
    kind_ = "conv_transpose" if transposed else "conv"
    conv, backward = getattr(convscope, f"{kind_}{nd}d"), getattr(convscope, f"{kind_}{nd}d_backward")
    g = rng.standard_normal(conv(x, w, b, **params).shape).astype(np.float32)

    def fb():
        conv(x, w, b, **params)
        backward(g, x, w, **params)

    return (lambda: conv(x, w, b, **params)), fb


def measure(layer, repeat, handover, min_sample, rng):
    """Median milliseconds of torch's and convscope's forward / forward+backward and of every product."""
    torch_fwd, torch_fb = bench_nd.torch_calls(layer, rng)
    cs_fwd, cs_fb = convscope_calls(layer, rng)
    calls = {("torch", "forward"): torch_fwd, ("torch", "f+b"): torch_fb,
             ("convscope", "forward"): cs_fwd, ("convscope", "f+b"): cs_fb}
    for pass_, layouts in products(layer, rng).items():
        calls.update({(pass_, lay): fn for lay, fn in layouts.items()})
    wino = winograd_product(layer, rng)
    if wino is not None:
        calls[("winograd", "products")] = wino
    times = {k: [] for k in calls}
    for _ in range(repeat):
        for key, fn in calls.items():
            times[key].append(bench_conv.sample(fn, handover, min_sample) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


HEADER = ("| layer | kind | torch fwd ms | floor fwd ms | best layout | floor ÷ torch | Winograd floor ÷ torch | "
          "torch f+b ms | floor f+b ms | ÷ torch | Winograd ÷ torch | convscope fwd ms | ÷ floor | "
          "convscope f+b ms | ÷ floor |\n"
          "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def kind(layer) -> str:
    name, _, w_shape, params, _ = layer
    if name.startswith("tr."):
        return "transposed"
    if _depthwise(layer):
        return "depthwise"
    if all(k == 1 for k in w_shape[2:]):
        return "1×1"
    if _winograd_shape(layer):
        return "3×3/1"
    return "strided" if any(s > 1 for s in _per_axis(params.get("stride", 1), len(w_shape) - 2)) else "dense"


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _winograd_shape(layer) -> bool:
    name, _, w_shape, params, _ = layer
    return (not name.startswith("tr.") and len(w_shape) in (4, 5) and tuple(w_shape[-2:]) == (3, 3)
            and params.get("stride", 1) == 1 and params.get("dilation", 1) == 1 and params.get("groups", 1) == 1)


def row(layer, t):
    """(the table's row, (fwd, f+b, Winograd fwd, Winograd f+b) floor ÷ torch, (fwd, f+b) convscope ÷ the
    lower floor)."""
    passes = ("forward", "grad_input", "grad_weight")
    best = {p: min((lay for (q, lay) in t if q == p), key=lambda lay: t[(p, lay)]) for p in passes}
    fwd = t[("forward", best["forward"])]
    fb = sum(t[(p, best[p])] for p in passes)
    tf, tb = t[("torch", "forward")], t[("torch", "f+b")]
    wino = t.get(("winograd", "products"))
    wf = f"{wino / tf:.2f}" if wino is not None else ""
    wb = f"{3 * wino / tb:.2f}" if wino is not None else ""
    ratios = (fwd / tf, fb / tb, None if wino is None else wino / tf, None if wino is None else 3 * wino / tb)
    cf, cb = t[("convscope", "forward")], t[("convscope", "f+b")]
    over = (cf / min(fwd, wino or fwd), cb / min(fb, 3 * wino if wino is not None else fb))
    return (f"| {layer[0]} | {kind(layer)} | {tf:.3f} | {fwd:.3f} | {best['forward']} | {fwd / tf:.2f} | {wf} | "
            f"{tb:.3f} | {fb:.3f} | {fb / tb:.2f} | {wb} | {cf:.3f} | {over[0]:.2f} | {cb:.3f} | {over[1]:.2f} |"), \
        ratios, over


def _geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def _summary(label, rows):
    """One line of geomeans over ``rows``, each (floor ÷ torch ratios, convscope ÷ floor ratios)."""
    floor = [r for r, _ in rows]
    best_f = [r[0] if r[2] is None else min(r[0], r[2]) for r in floor]
    best_b = [r[1] if r[3] is None else min(r[1], r[3]) for r in floor]
    return (f"floor ÷ torch geomean, {label} ({len(rows)}): products alone forward "
            f"{_geomean(r[0] for r in floor):.2f}, forward+backward {_geomean(r[1] for r in floor):.2f}; "
            f"the lower of that and Winograd's forward {_geomean(best_f):.2f}, forward+backward {_geomean(best_b):.2f}; "
            f"convscope ÷ that floor forward {_geomean(o[0] for _, o in rows):.2f}, "
            f"forward+backward {_geomean(o[1] for _, o in rows):.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=("nd", "conv2d"), default="nd",
                    help="bench_nd.py's layers (default) or the rows of bench_conv.py's targets")
    ap.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (the suite's names)")
    ap.add_argument("--repeat", type=int, default=5, help="alternating samples per call (median; default 5)")
    ap.add_argument("--handover", type=float, default=0.2, help="untimed calls before each sample, seconds")
    ap.add_argument("--min-sample", type=float, default=0.02, help="a sample lasts at least this, seconds")
    ap.add_argument("--malloc", choices=list(bench_conv.MALLOC_MODES),
                    help="glibc's thresholds as bench_conv.py's --malloc (default: the suite's bench's setting, "
                         "'reuse' for conv2d, 'default' for nd)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = ap.parse_args(argv)
    allocator = bench_conv.configure_malloc(args.malloc or ("reuse" if args.suite == "conv2d" else "default"))
    layers = bench_nd.LAYERS + bench_nd.TRANSPOSED if args.suite == "nd" else conv2d_layers()
    if args.layers:
        known = {layer[0] for layer in layers}
        unknown = [n for n in args.layers if n not in known]
        if unknown:
            print(f"floor.py: error: --layers: not a layer of the {args.suite} suite: {', '.join(unknown)}",
                  file=sys.stderr)
            return 2
        layers = [layer for layer in layers if layer[0] in args.layers]
    import torch
    from threadpoolctl import threadpool_limits

    import convscope

    threads = bench_conv.usable_cores()
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    rng = np.random.default_rng(0)
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  python bench/floor.py "
             + " ".join(sys.argv[1:] if argv is None else argv),
             f"# {bench_conv.cpu_model()}, {threads} thread(s), torch {torch.__version__}, NumPy {np.__version__}, "
             f"convscope {convscope.__version__} from {os.path.dirname(os.path.realpath(convscope.__file__))}; "
             f"wall time, median of {args.repeat} alternating samples, {args.handover} s handover; {allocator}",
             "", HEADER]
    print("\n".join(lines), flush=True)
    by_kind = {}
    for layer in layers:
        text, ratios, over = row(layer, measure(layer, args.repeat, args.handover, args.min_sample, rng))
        by_kind.setdefault(kind(layer), []).append((ratios, over))
        lines.append(text)
        print(text, flush=True)
    lines.append("")
    every = [r for rows in by_kind.values() for r in rows]
    summaries = [_summary(f"{k} layers", rows) for k, rows in by_kind.items()]
    if args.suite == "nd":
        conv = [r for k, rows in by_kind.items() if k != "transposed" for r in rows]
        summaries.append(_summary("Conv1d/Conv3d layers", conv))
    summaries.append(_summary("every layer", every))
    for text in summaries:
        lines.append(text)
        print(text, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
