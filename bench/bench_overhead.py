"""convscope's fixed cost per call, against torch's: forward and backward of a tiny convolution and of a
MobileNetV2-size 1×1 layer.

The tiny call (x (1, 1, 2, 2), w (1, 1, 1, 1)) computes almost nothing, so its time is the Python cost of
a call: validation, planning, the memory check and the plumbing around the kernel.  The 1×1 layer
(MobileNetV2's features.15.project, batch 8) shows that cost beside real work.

Each (library, pass) is timed in rounds that alternate between the libraries, each round after
``--handover`` seconds of untimed calls of the same library; the figure is the minimum over the rounds of
the mean time per call (the least disturbed round: the machine may be shared).  torch's backward is the
autograd backward of its forward (forward included, as ``conv2d_backward`` is not); convscope's backward
is ``conv2d_backward`` alone.

    PYTHONPATH=src python bench/bench_overhead.py [--rounds 7] [--handover 0.2]
"""
from __future__ import annotations

import argparse
import time
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np

import convscope

CASES = {
    "tiny (1,1,2,2) * (1,1,1,1)": ((1, 1, 2, 2), (1, 1, 1, 1)),
    "mb.features.15.project (8,960,7,7) * (160,960,1,1)": ((8, 960, 7, 7), (160, 960, 1, 1)),
}


def _calls(x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    gy = rng.standard_normal(convscope.conv2d(x, w).shape).astype(np.float32)
    calls = {("convscope", "forward"): lambda: convscope.conv2d(x, w),
             ("convscope", "backward"): lambda: convscope.conv2d_backward(gy, x, w)}
    try:
        import torch
    except ImportError:
        return calls
    xt, wt, gt = (torch.from_numpy(a) for a in (x, w, gy))
    xg, wg = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)

    def torch_backward():
        xg.grad = wg.grad = None
        torch.nn.functional.conv2d(xg, wg).backward(gt)

    calls[("torch", "forward")] = lambda: torch.nn.functional.conv2d(xt, wt)
    calls[("torch", "backward")] = torch_backward
    return calls


def _per_call(fn, seconds: float) -> float:
    """Mean seconds per call over about ``seconds`` of calls."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 5:
            return elapsed / n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--handover", type=float, default=0.2, help="seconds of untimed calls before a sample")
    parser.add_argument("--sample", type=float, default=0.2, help="seconds per timed sample")
    args = parser.parse_args(argv)
    print(f"convscope {convscope.__version__}, numpy {np.__version__}; best of {args.rounds} rounds (µs per call)")
    for case, (x_shape, w_shape) in CASES.items():
        calls = _calls(x_shape, w_shape)
        best = {key: float("inf") for key in calls}
        for _ in range(args.rounds):
            for key, fn in calls.items():
                _per_call(fn, args.handover)                            # handover: this library's turn
                best[key] = min(best[key], _per_call(fn, args.sample))
        print(case)
        for pass_ in ("forward", "backward"):
            row = "  ".join(f"{lib} {best[(lib, pass_)] * 1e6:9.1f}" for lib in ("convscope", "torch")
                            if (lib, pass_) in best)
            print(f"  {pass_:<9} {row}")


if __name__ == "__main__":
    main()
