"""The pointwise (1×1) path's two layouts, each forced, on bench_conv.py's 1×1 layers: what its rule is fitted on.

For every layer and pass (forward; grad_input and grad_weight together, as ``conv2d_backward`` asks
them) this times ``convscope.algorithms.pointwise`` with every pass per sample and with every pass
batch folded, in alternating rounds, and prints the medians, folded ÷ per sample, and which layout
:func:`convscope.algorithms.pointwise.folded` picks.  (The same numbers for the bare products are
``bench/pointwise_floor.py``.)

    PYTHONPATH=src python bench/pointwise_layouts.py                 # all cores, wall time
    PYTHONPATH=src python bench/pointwise_layouts.py --cpu-time      # one thread, process CPU time
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pointwise_floor import pointwise_layers, sample  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-time", action="store_true", help="one thread (BLAS, numba), process CPU time")
    ap.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (bench_conv.py's names)")
    ap.add_argument("--repeat", type=int, default=5, help="alternating samples per layout (median; default 5)")
    args = ap.parse_args(argv)
    import convscope
    from convscope.algorithms import pointwise
    from convscope.spec import check_shapes, make_spec
    from threadpoolctl import threadpool_limits

    if args.cpu_time:
        threadpool_limits(1)
        convscope.set_num_threads(1)
    clock = time.process_time if args.cpu_time else time.perf_counter
    rule = dict(pointwise.FOLD_RATIO), dict(pointwise.FOLD_BELOW_PIXELS)
    forced = {"per sample": (dict.fromkeys(rule[0], float("inf")), rule[1]),
              "folded": (dict.fromkeys(rule[0], -1.0), dict.fromkeys(rule[1], 1 << 62))}
    rng = np.random.default_rng(0)
    print("layer | pass | per sample ms | folded ms | folded ÷ per sample | rule")
    for layer in pointwise_layers():
        if args.layers and layer.name not in args.layers:
            continue
        spec = make_spec((1, 1), stride=layer.stride)
        x = rng.standard_normal((layer.N, layer.C_in, layer.H, layer.W), dtype=np.float32)
        w = rng.standard_normal((layer.C_out, layer.C_in, 1, 1), dtype=np.float32)
        b = rng.standard_normal(layer.C_out, dtype=np.float32)
        shape = check_shapes(spec, x.shape, w.shape)
        g = rng.standard_normal((layer.N, layer.C_out, shape.H_out, shape.W_out), dtype=np.float32)
        calls = {"forward": lambda: pointwise.forward(x, w, b, spec, shape),
                 "backward": lambda: pointwise.backward(g, x, w, spec, shape, (True, True))}
        times = {}
        for _ in range(args.repeat):
            for layout, (ratio, below) in forced.items():
                pointwise.FOLD_RATIO, pointwise.FOLD_BELOW_PIXELS = ratio, below
                for pass_, fn in calls.items():
                    times.setdefault((layout, pass_), []).append(sample(fn, clock, 0.02, 0.02))
        pointwise.FOLD_RATIO, pointwise.FOLD_BELOW_PIXELS = rule
        for pass_ in calls:
            ps, fo = (statistics.median(times[(lay, pass_)]) for lay in forced)
            chosen = (pointwise.folded(spec, shape, "forward") if pass_ == "forward"
                      else pointwise._backward_layouts(spec, shape, (True, True)))
            print(f"{layer.name} | {pass_} | {ps:.3f} | {fo:.3f} | {fo / ps:.2f} | {chosen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
