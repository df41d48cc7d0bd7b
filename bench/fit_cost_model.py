#!/usr/bin/env python
"""Re-fit the planner's FFT and gemm cost models from timings on this machine.

Usage::

    python bench/fit_cost_model.py                 # 60 layers, about 10 minutes on 2 cores
    python bench/fit_cost_model.py --quick         # 16 layers, about 2 minutes
    python bench/fit_cost_model.py --json fit.json # also write the timings and the coefficients

For every layer of a grid (kernels 3×3 to 15×15, 8 to 128 channels each way, images 14² to
56², batch 1 and 8, stride 1 and 2) it times the three passes (forward, grad_input,
grad_weight) of ``algorithm='fft'`` and ``algorithm='gemm'`` in float32, the two interleaved,
median of ``--repeat``.  Then, for each path, it fits the coefficients of its cost model's terms
(:func:`convscope.algorithms.fft.cost_terms`, :func:`convscope.algorithms.gemm.cost_terms`) by
least squares on the relative error (each row divided by its measured time), non-negative when
SciPy is there, and prints them in the form of the modules' ``COST_MS`` dictionaries, with how
often the fitted comparison picks the faster path and the worst slowdown when it does not.

The coefficients are milliseconds for all three passes.  Paste them into
``src/convscope/algorithms/fft.py`` and ``gemm.py`` (``COST_MS``) to make the planner's row
*fft* follow this machine; or let tuning (``convscope.set_tuning(True)``) measure each layer.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np

import convscope
from convscope.algorithms import fft, gemm
from convscope.spec import check_shapes, make_spec

PASSES = ("forward", "grad_input", "grad_weight")


def layers(quick: bool):
    """(N, C, O, hw, k, stride) of the grid."""
    if quick:
        grid = itertools.product((8,), (16, 64), (16, 64), (28, 56), (3, 7), (1, 2))
    else:
        grid = itertools.product((1, 8), (8, 32, 128), (16, 64), (14, 28, 56), (3, 5, 9, 15), (1, 2))
    out = []
    for N, C, O, hw, k, s in grid:
        if k > hw // 2 or (not quick and (C * O * hw * hw * N > 8 * 64 * 64 * 56 * 56 or len(out) >= 60)):
            continue
        out.append((N, C, O, hw, k, s))
    return out


def three_passes(name, x, w, g, params):
    t = []
    t0 = time.perf_counter()
    convscope.conv2d(x, w, algorithm=name, **params)
    t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    convscope.conv2d_input(x.shape, w, g, algorithm=name, **params)
    t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    convscope.conv2d_weight(x, w.shape, g, algorithm=name, **params)
    t.append(time.perf_counter() - t0)
    return t


def measure(layer, repeat):
    N, C, O, hw, k, s = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((O, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    params = dict(stride=s, padding=k // 2)
    g = rng.standard_normal(convscope.conv2d(x, w, **params).shape).astype(np.float32)
    samples = {"fft": [], "gemm": []}
    for name in samples:                                            # warm-up
        three_passes(name, x, w, g, params)
    for _ in range(repeat):
        for name in samples:
            samples[name].append(sum(three_passes(name, x, w, g, params)))
    spec = make_spec((k, k), s, k // 2)
    shape = check_shapes(spec, x.shape, w.shape)
    return spec, shape, {name: 1e3 * statistics.median(v) for name, v in samples.items()}


def fit(terms, times):
    """Coefficients minimising Σ ((A c − t) / t)², non-negative with SciPy."""
    names = list(terms[0])
    A = np.array([[row[n] for n in names] for row in terms]) / np.array(times)[:, None]
    b = np.ones(len(times))
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1
    try:
        from scipy.optimize import nnls

        c, _ = nnls(A / scale, b)
    except ImportError:
        c = np.linalg.lstsq(A / scale, b, rcond=None)[0]
    return dict(zip(names, (c / scale).tolist()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 layers instead of 60")
    ap.add_argument("--repeat", type=int, default=3, help="timed samples per layer and path (median)")
    ap.add_argument("--json", help="write the timings and the coefficients to this file")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    rows = []
    for layer in layers(args.quick):
        spec, shape, ms = measure(layer, args.repeat)
        rows.append((layer, spec, shape, ms))
        print(f"N={layer[0]} {layer[1]}→{layer[2]} {layer[3]}² {layer[4]}×{layer[4]}/{layer[5]}: "
              f"fft {ms['fft']:.1f} ms, gemm {ms['gemm']:.1f} ms", flush=True)
    coef = {
        "fft": fit([fft.cost_terms(sp, sh) for _, sp, sh, _ in rows], [ms["fft"] for *_, ms in rows]),
        "gemm": fit([gemm.cost_terms(sp, sh) for _, sp, sh, _ in rows], [ms["gemm"] for *_, ms in rows]),
    }
    right, worst = 0, 1.0
    for _, sp, sh, ms in rows:
        est = {n: sum(coef[n][t] * v for t, v in mod.cost_terms(sp, sh).items())
               for n, mod in (("fft", fft), ("gemm", gemm))}
        picked = min(est, key=est.get)
        best = min(ms, key=ms.get)
        right += picked == best
        worst = max(worst, ms[picked] / ms[best])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if sys.platform.startswith("linux") else platform.processor()
    print(f"\nCPU: {cpu}; {convscope.get_num_threads()} threads; {fft.describe_backend()}")
    for name, c in coef.items():
        print(f"{name}.COST_MS = dict(" + ", ".join(f"{k}={v:.3g}" for k, v in c.items()) + ")")
    print(f"the fitted comparison picks the faster path for {right} of {len(rows)} layers; "
          f"where it does not, the pick takes at most {worst:.2f}× the faster's time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "coefficients": coef,
                       "layers": [dict(layer=layer, ms=ms) for layer, _, _, ms in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
