"""Settings changed from one thread while others compute: no error, the same numbers.

Threads run conv2d and conv2d_backward on Winograd (its output scatter runs on convscope's thread
pool), FFT, gemm and depthwise layers while another thread toggles set_num_threads,
set_workspace_limit, workspace_limit(...) and the precision switch.  A call sees one setting
throughout, so every result must equal, bit for bit, the result computed beforehand on one thread
under one of the settings toggled (the workspace limit decides how work is cut, which may change
the last bits).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import convscope

MiB = 1 << 20
STRESS_SECONDS = 1.5

# (x shape, weight shape, params, algorithm); the 16 KiB limit cuts each into rows or slices
LAYERS = [
    ((2, 16, 12, 12), (16, 16, 3, 3), dict(padding=1), "winograd"),
    ((2, 4, 16, 16), (4, 4, 7, 7), dict(padding=3), "fft"),
    ((2, 8, 10, 10), (8, 8, 3, 3), dict(padding=1, padding_mode="reflect"), "gemm"),
    ((2, 8, 12, 12), (8, 1, 3, 3), dict(padding=1, groups=8), None),
]


def _arrays(x_shape, w_shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)


def _run(x, w, params, algorithm, g):
    y = convscope.conv2d(x, w, padding=params.get("padding", 0), groups=params.get("groups", 1),
                         padding_mode=params.get("padding_mode", "zeros"), algorithm=algorithm)
    grads = convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params)
    return (y,) + tuple(grads)


LIMITS = [256 * MiB, 16 << 10, 1 * MiB]
THREADS = [1, 2]


def _toggle(stop, errors):
    limits = LIMITS
    k = 0
    try:
        while not stop.is_set():
            convscope.set_num_threads(THREADS[k % 2])
            convscope.set_workspace_limit(limits[k % 3])
            convscope.set_conv_precision(("high", "highest")[k % 2])
            with convscope.workspace_limit(limits[(k + 1) % 3]), convscope.conv_precision("high"):
                time.sleep(0.001)
            k += 1
    except Exception as exc:                                  # noqa: BLE001 (reported by the test)
        errors.append(repr(exc))


def test_settings_change_while_other_threads_compute():
    cases = []
    for i, (xs, ws, params, algorithm) in enumerate(LAYERS):
        x, w = _arrays(xs, ws, i)
        y = convscope.conv2d(x, w, **params, algorithm=algorithm)
        g = np.random.default_rng(10 + i).standard_normal(y.shape).astype(np.float32)
        cases.append((x, w, params, algorithm, g))
    previous = (convscope.get_num_threads(), convscope.get_workspace_limit(), convscope.get_conv_precision())
    try:
        expected = [[] for _ in cases]                       # per case, the results under each setting
        for n in THREADS:
            for limit in LIMITS:
                convscope.set_num_threads(n)
                convscope.set_workspace_limit(limit)
                for k, case in enumerate(cases):
                    expected[k].append(_run(*case))
        stop, errors, mismatches, runs = threading.Event(), [], [], [0]

        def compute(offset):
            try:
                while not stop.is_set():
                    for i in range(len(cases)):
                        k = (i + offset) % len(cases)
                        got = _run(*cases[k])
                        runs[0] += 1
                        for f, name in enumerate(("output", "input", "weight", "bias")):
                            if not any(np.array_equal(got[f], want[f]) for want in expected[k]):
                                err = min(float(np.abs(got[f] - want[f]).max()) for want in expected[k])
                                mismatches.append((k, name, err))
            except Exception as exc:                          # noqa: BLE001 (reported by the test)
                errors.append(repr(exc))

        workers = [threading.Thread(target=compute, args=(k,)) for k in range(3)]
        toggler = threading.Thread(target=_toggle, args=(stop, errors))
        for t in workers + [toggler]:
            t.start()
        time.sleep(STRESS_SECONDS)
        stop.set()
        for t in workers + [toggler]:
            t.join()
    finally:
        convscope.set_num_threads(previous[0])
        convscope.set_workspace_limit(previous[1])
        convscope.set_conv_precision(previous[2])
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:5]
    assert runs[0] >= len(cases)



def test_num_threads_block_is_the_calling_threads_own():
    import threading

    outer = convscope.get_num_threads()
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def other():
        entered.wait(5)
        seen["other"] = convscope.get_num_threads()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with convscope.num_threads(1):
        seen["inside"] = convscope.get_num_threads()
        entered.set()
        release.wait(5)
    t.join(5)
    assert seen == {"inside": 1, "other": outer}
    assert convscope.get_num_threads() == outer
    with pytest.raises(ValueError, match="num_threads"):
        with convscope.num_threads(0):
            pass


_CONCURRENT_SCRIPT = r"""
import threading
import numpy as np
import numba
import convscope
from convscope.algorithms.kernels import _numba

rng = np.random.default_rng(0)
layers = [(rng.standard_normal((2, 8, 12, 12)).astype(np.float32), rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
           dict(padding=1, groups=8)),
          (rng.standard_normal((2, 16, 12, 12)).astype(np.float32), rng.standard_normal((16, 16, 3, 3)).astype(np.float32),
           dict(padding=1))]
want = [convscope.conv2d(x, w, **p) for x, w, p in layers]
errors = []

def compute(k):
    try:
        for _ in range(20):
            x, w, p = layers[k % 2]
            if not np.array_equal(convscope.conv2d(x, w, **p), want[k % 2]):
                errors.append("different result")
    except Exception as exc:
        errors.append(repr(exc))

workers = [threading.Thread(target=compute, args=(k,)) for k in range(4)]
for t in workers:
    t.start()
for t in workers:
    t.join()
print(numba.threading_layer(), _numba.layer_runs_concurrently(), errors)
"""


@pytest.mark.parametrize("layer", ["workqueue", None])
def test_compiled_kernels_launch_from_several_threads(layer):
    """Four threads launch compiled kernels at once, on numba's workqueue layer (launches serialised by
    convscope's lock) and on the layer convscope picks by default (TBB's where installed): the same
    results as one thread, no error, and a layer that runs launches concurrently only where it can."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    done = subprocess.run([sys.executable, "-c", _CONCURRENT_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    used, concurrent, errors = done.stdout.split(maxsplit=2)
    assert errors.strip() == "[]"
    from convscope.algorithms.kernels import _numba
    assert used == (layer or _numba.default_layer())
    assert concurrent == str(used in ("tbb", "omp"))


def test_default_layer_is_tbb_only_where_it_loads(monkeypatch):
    from convscope.algorithms.kernels import _numba

    monkeypatch.setattr(_numba, "tbb_usable", lambda: False)
    assert _numba.default_layer() == "workqueue"
    monkeypatch.setattr(_numba, "tbb_usable", lambda: True)
    assert _numba.default_layer() == "tbb"
